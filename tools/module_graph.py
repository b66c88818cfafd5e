"""Draw the import graph between the top-level modules of ``mchad`` and check that layers run one way.

    python tools/module_graph.py            # rewrite the diagram in docs/architecture.md
    python tools/module_graph.py --check    # exit 1 on an upward import, a cycle, or a stale diagram

A "room" is a top-level module or subpackage of ``src/mchad`` (``mchad.data``, ``mchad.train``...);
an arrow ``a --> b`` means some file of ``a`` imports from ``b``. :data:`LAYERS` is the intended order,
lowest first: a room may import only from rooms of its own layer or below.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mchad"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- module graph: begin (tools/module_graph.py) -->", "<!-- module graph: end -->"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("errors", "files")),
    ("config", ("config", "schema")),
    ("data", ("data",)),
    ("model", ("nn", "methods")),
    ("training loop", ("module", "progress", "visualize")),
    ("evaluation", ("evaluation",)),
    ("runs and results", ("train", "rundir", "loggers")),
    ("report", ("report",)),
    ("command line", ("cli",)),
]


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "mchad" and len(parts) > 1 else None


def file_room(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_modules(path: Path) -> set[str]:
    """Absolute names a file imports (``from mchad import x`` counts as ``mchad.x``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{alias.name}" if node.module == "mchad" else node.module for alias in node.names}
    return names


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue
        source = file_room(path)
        edges[source]  # every room is drawn, even one without imports
        for module in imported_modules(path):
            target = room_of(module)
            if target and target != source:
                edges[source].add(target)
    return edges


def layer_of() -> dict[str, int]:
    return {room: index for index, (_, rooms) in enumerate(LAYERS) for room in rooms}


def problems(edges: dict[str, set[str]]) -> list[str]:
    layers = layer_of()
    found = [
        f"room {room} is in no layer: add it to LAYERS in tools/module_graph.py" for room in edges if room not in layers
    ]
    for source, targets in edges.items():
        for target in targets:
            if source in layers and target in layers and layers[target] > layers[source]:
                found.append(
                    f"upward import: {source} ({LAYERS[layers[source]][0]}) imports {target} ({LAYERS[layers[target]][0]})"
                )
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each room that lies on one (depth-first search)."""
    found, state = [], {}

    def visit(room: str, stack: list[str]) -> None:
        state[room] = "open"
        for target in sorted(edges.get(room, ())):
            if state.get(target) == "open":
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[room] = "done"

    for room in sorted(edges):
        if room not in state:
            visit(room, [room])
    return found


def mermaid(edges: dict[str, set[str]]) -> str:
    lines = ["```mermaid", "flowchart BT"]
    for index, (name, rooms) in enumerate(LAYERS):
        present = [room for room in rooms if room in edges]
        if present:
            lines.append(f'  subgraph L{index}["{index}. {name}"]')
            lines += [f"    {room}[{'mchad.' + room}]" for room in present]
            lines.append("  end")
    for source in sorted(edges):
        lines += [f"  {source} --> {target}" for target in sorted(edges[source])]
    lines.append("```")
    return "\n".join(lines)


def rendered(text: str, diagram: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{diagram}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/module_graph.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check only: exit 1 on a problem or a stale diagram")
    args = parser.parse_args(argv)
    edges = graph()
    found = problems(edges)
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        found.append(f"{DOC} has no {BEGIN} ... {END} block for the diagram")
    else:
        new = rendered(text, mermaid(edges))
        if args.check and new != text:
            found.append(f"the diagram in {DOC.relative_to(ROOT)} is stale: run python tools/module_graph.py")
        elif not args.check:
            DOC.write_text(new)
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
