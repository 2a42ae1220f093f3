"""mkdocs hook: the guides link to files outside docs/ (examples/, vm-images/README.md); the
site carries copies of them, and those links point at the copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

OUTSIDE = ("examples", "vm-images")


def on_files(files: Files, config: Any) -> Files:
    root = Path(config["docs_dir"]).resolve().parent
    for folder in OUTSIDE:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and path.suffix in (".yaml", ".py", ".md", ".toml", ".json"):
                rel = path.relative_to(root).as_posix()
                files.append(File.generated(config, rel, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    for folder in OUTSIDE:
        markdown = markdown.replace(f"](../{folder}/", f"]({folder}/")
    return markdown
