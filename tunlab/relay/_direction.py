"""The two directions of a relay or a link: A_TO_B from its first device (or endpoint) to the
second, B_TO_A back. One enum everywhere; strings are turned into it only where files, the
CLI and control messages are read (Direction.parse)."""

from __future__ import annotations

import enum


class Direction(str, enum.Enum):
    """A direction; its value ("a_to_b", "b_to_a") is how files and the CLI write it."""

    A_TO_B = "a_to_b"
    B_TO_A = "b_to_a"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object, option: str = "direction") -> Direction:
        """A Direction from what a file, the CLI or a control message says (a_to_b, b_to_a; the
        arrows a->b, b->a too); ValueError naming the option and the value otherwise."""
        if isinstance(value, Direction):
            return value
        if isinstance(value, str):
            text = value.strip().lower().replace("->", "_to_")
            for member in cls:
                if member.value == text:
                    return member
        raise ValueError(f"{option}: expected 'a_to_b' or 'b_to_a', got {value!r}")


DIRECTIONS: tuple[Direction, Direction] = (Direction.A_TO_B, Direction.B_TO_A)
