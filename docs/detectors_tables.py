"""Regenerate the parameter tables in docs/detectors.md from the detector classes.

    .venv/bin/python docs/detectors_tables.py          # rewrite the generated block
    .venv/bin/python docs/detectors_tables.py --check  # exit 1 if the doc is stale

Only the text between the BEGIN/END markers is generated: defaults come from the constructor
signatures, meanings from each class's numpydoc ``Parameters`` section, so the doc cannot
drift from the code unnoticed. Everything else in the page is written by hand.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from pathlib import Path

DOC = Path(__file__).with_name("detectors.md")
BEGIN = "<!-- BEGIN GENERATED: parameter tables (docs/detectors_tables.py) -->"
END = "<!-- END GENERATED -->"
ORDER = ["ADWIN", "KSWIN", "PageHinkley", "CUSUM", "EWMAChart", "DDM", "EDDM", "HDDM_A", "HDDM_W"]


def parameter_docs(doc: str) -> dict[str, str]:
    """``name -> one-line meaning`` from a numpydoc ``Parameters`` section."""
    text = textwrap.dedent("\n".join(doc.splitlines()[1:]))
    match = re.search(r"^Parameters\n-+\n(.*?)(?=^\S[^\n]*\n-+\n|\Z)", text, re.M | re.S)
    if not match:
        return {}
    found: dict[str, str] = {}
    name = None
    for line in match.group(1).splitlines():
        if line and not line[0].isspace():
            name = line.split(":")[0].strip()
            found[name] = ""
        elif name and line.strip():
            found[name] = (found[name] + " " + line.strip()).strip()
    return found


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def class_table(cls: type, params: tuple[str, ...] | None = None) -> list[str]:
    signature = inspect.signature(cls)
    meanings = parameter_docs(cls.__doc__ or "")
    names = params if params is not None else tuple(signature.parameters)
    lines = ["| parameter | default | meaning |", "|---|---|---|"]
    for name in names:
        default = signature.parameters[name].default
        shown = "required" if default is inspect.Parameter.empty else f"`{default!r}`"
        lines.append(f"| `{name}` | {shown} | {cell(meanings.get(name, '(undocumented)'))} |")
    return lines


def render() -> str:
    import driftline.detectors  # noqa: F401  (fills REGISTRY)
    from driftline.detectors.base import REGISTRY
    from driftline.detectors.histogram import CategoricalWindow, NumericWindow

    names = [n for n in ORDER if n in REGISTRY] + sorted(set(REGISTRY) - set(ORDER))
    missing = [n for n in ORDER if n not in REGISTRY]
    out = [BEGIN, ""]
    for name in names:
        cls = REGISTRY[name]
        detector = cls()
        size = detector._state.shape[0]
        binary = getattr(cls, "binary_input", False)
        out.append(f"#### {name} (`{cls.__module__}`)")
        out.append("")
        out.append(
            f"Input: {'a 0/1 error indicator (`binary_input`; the docstring says which values pass)' if binary else 'any finite number'}"
            f" · warning zone: {'yes' if cls.has_warning else 'no'}"
            f" · state: {size} float64 values ({size * 8:,} bytes per stream with defaults)"
        )
        out.append("")
        out.extend(class_table(cls, cls._params))
        out.append("")
    if missing:
        out.append(f"Not landed yet when this block was generated: {', '.join(missing)}.")
        out.append("")
    for cls in (NumericWindow, CategoricalWindow):
        out.append(f"#### {cls.__name__} (`{cls.__module__}`)")
        out.append("")
        out.extend(class_table(cls))
        out.append("")
    out.append(END)
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if the doc is stale")
    args = parser.parse_args()
    text = DOC.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + render() + text[stop:]
    if args.check:
        if updated != text:
            print(f"{DOC} is stale: run .venv/bin/python {Path(__file__).as_posix()}")
            return 1
        return 0
    DOC.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
