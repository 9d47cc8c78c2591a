"""The batch side of jitrace: load spans and logs, run the pipeline of queries/, write the outputs.

``open_output(DIR)`` opens an output folder as pandas DataFrames (analyzer/notebook.py, the notebooks' way in);
imported when first used, so the CLI does not pay for pandas.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "open_output":
        from jitrace.analyzer.notebook import open_output

        return open_output
    raise AttributeError(f"module 'jitrace.analyzer' has no attribute {name!r}")
