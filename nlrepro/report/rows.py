"""A row of a paper table at one depth, as the claims and the validity test name it."""

from __future__ import annotations

from dataclasses import dataclass

from nlrepro.errors import ConfigError


@dataclass(frozen=True)
class RowRef:
    """One row of one table at one depth: ``"2a/Gaussian, embed/50"``."""

    table: str
    row: str
    depth: int

    @classmethod
    def parse(cls, text: str) -> "RowRef":
        parts = str(text).split("/")
        if len(parts) < 3 or not parts[-1].strip().isdigit():
            raise ConfigError(f"claim row {text!r}: expected '<table>/<row label>/<depth>'")
        return cls(parts[0].strip(), "/".join(parts[1:-1]).strip(), int(parts[-1]))

    def __str__(self) -> str:
        return f"{self.table} {self.row} R{self.depth}"
