"""Dump the metadata and tensor table of the SmolLM2 GGUF into a text fixture.

Run in the reference venv (scripts/setup-reference-venv) after scripts/fetch-assets:

    $VENV/bin/python tests/reference/gguf_metadata.py [GGUF] [OUT]

Arrays are shown as their length and first 3 items. Tensor shapes are printed as
GGUF stores them (ne[0] first, i.e. the reverse of the PyTorch shape) and, after
'torch', in PyTorch order.
"""

import os
import sys
from collections import Counter
from pathlib import Path

import gguf

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PEFTC_CACHE", Path.home() / ".cache" / "peftc"))
DEFAULT_GGUF = CACHE / "assets" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = REPO / "tests" / "fixtures" / "smollm2_gguf_metadata.txt"


def render_value(field):
    types = field.types
    if not types:
        return "<none>"
    if types[0] == gguf.GGUFValueType.ARRAY:
        n = len(field.data)
        items = []
        for idx in field.data[:3]:
            part = field.parts[idx]
            if types[-1] == gguf.GGUFValueType.STRING:
                items.append(repr(bytes(part).decode("utf-8", errors="replace")))
            else:
                items.append(repr(part.tolist()[0] if len(part) == 1 else part.tolist()))
        return f"array<{types[-1].name}>[{n}] first {len(items)}: [{', '.join(items)}]"
    value = field.contents()
    if isinstance(value, str):
        return f"{types[0].name} {value!r}"
    return f"{types[0].name} {value!r}"


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_GGUF
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUT
    reader = gguf.GGUFReader(str(path))
    from importlib.metadata import version
    lines = [f"# GGUF metadata of {path.name} (gguf-py {version('gguf')})",
             f"# file size {path.stat().st_size} bytes", "", "## metadata (key = type value)"]
    for name, field in reader.fields.items():
        lines.append(f"{name} = {render_value(field)}")
    lines += ["", f"## tensors ({len(reader.tensors)} in all)",
              "# name | type | gguf shape (ne0 first) | torch shape | elements | bytes"]
    for t in reader.tensors[:30]:
        gshape = [int(x) for x in t.shape]
        lines.append(f"{t.name} | {t.tensor_type.name} | {gshape} | {list(reversed(gshape))} | "
                     f"{int(t.n_elements)} | {int(t.n_bytes)}")
    if len(reader.tensors) > 30:
        lines.append(f"... {len(reader.tensors) - 30} more")
    counts = Counter(t.tensor_type.name for t in reader.tensors)
    elems = Counter()
    for t in reader.tensors:
        elems[t.tensor_type.name] += int(t.n_elements)
    lines += ["", "## tensors per type (count, elements)"]
    for k in sorted(counts):
        lines.append(f"{k}: {counts[k]} tensors, {elems[k]} elements")
    lines.append(f"total elements: {sum(elems.values())}")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(reader.fields)} keys, {len(reader.tensors)} tensors)")


if __name__ == "__main__":
    main()
