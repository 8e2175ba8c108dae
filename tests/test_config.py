"""Settings: every TEXTCLF_* variable is documented in the README's table."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_has_a_row_in_the_readme_table():
    rows = [line for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `TEXTCLF_")]
    names = [row.split(" | ")[0] for row in rows]  # `TEXTCLF_A` or `TEXTCLF_A` / `TEXTCLF_B`
    documented = {name for cell in names for name in re.findall(r"`(TEXTCLF_[A-Z0-9_]+)`", cell)}
    wanted = {f"TEXTCLF_{name.upper()}" for name in Settings.model_fields}
    assert wanted <= documented, f"not in the README's table: {sorted(wanted - documented)}"
