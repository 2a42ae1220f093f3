"""Which kernel a VM image uses is asked of apt once, then kept until apt's lists change (each
ask costs ~0.5 s, which every lab with a VM node used to pay on `up`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunlab._vm import images


def test_the_answer_is_kept_until_the_package_lists_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNLAB_VM_IMAGE_DIR", str(tmp_path))
    asked: list[str] = []
    answers = {"linux-image-amd64": ("linux-image-6.1.0-40-amd64", "6.1.153-1")}

    def ask(package: str) -> tuple[str, str]:
        asked.append(package)
        return answers[package]

    stamp = ["lists:1"]
    monkeypatch.setattr(images, "_resolve_kernel", ask)
    monkeypatch.setattr(images, "_lists_stamp", lambda: stamp[0])
    assert images.resolve_kernel("linux-image-amd64") == answers["linux-image-amd64"]
    assert images.resolve_kernel("linux-image-amd64") == answers["linux-image-amd64"]
    assert asked == ["linux-image-amd64"], "apt was asked again with unchanged lists"
    assert (tmp_path / "kernels.json").stat().st_mode & 0o022 == 0  # not group/world-writable
    stamp[0] = "lists:2"  # apt-get update ran
    answers["linux-image-amd64"] = ("linux-image-6.1.0-41-amd64", "6.1.158-1")
    assert images.resolve_kernel("linux-image-amd64") == ("linux-image-6.1.0-41-amd64", "6.1.158-1")
    assert asked == ["linux-image-amd64", "linux-image-amd64"]
    assert images.installed() == []  # the memo is not mistaken for an image


def test_a_corrupt_memo_is_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNLAB_VM_IMAGE_DIR", str(tmp_path))
    (tmp_path / "kernels.json").write_text("{not json")
    monkeypatch.setattr(images, "_resolve_kernel", lambda p: ("linux-image-x", "1"))
    monkeypatch.setattr(images, "_lists_stamp", lambda: "s")
    assert images.resolve_kernel("linux-image-amd64") == ("linux-image-x", "1")
