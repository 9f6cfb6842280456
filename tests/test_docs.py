"""The documentation's example optimizer must run as printed."""

from __future__ import annotations

import re
from pathlib import Path

from nnopt.data import generate_instance
from nnopt.loop import LoopSettings, train
from nnopt.optimizers import load_optimizer

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_api_page_example_optimizer_trains(tmp_path: Path) -> None:
    text = (DOCS / "api.md").read_text()
    match = re.search(r"```python\n(# signsgd\.py.*?)```", text, re.S)
    assert match, "docs/api.md lost its complete example"
    path = tmp_path / "signsgd.py"
    path.write_text(match.group(1))

    optimizer = load_optimizer(f"{path}:lr=5e-4")
    result = train(
        generate_instance("docs"), 2, optimizer, settings=LoopSettings(max_epochs=6)
    )

    first, last = result.history[0].val_loss, result.best_val_loss
    assert last < first
