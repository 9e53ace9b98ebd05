"""The paths answer: the heaviest edges, the nodes they touch and everyone counted (docs/paths.md,
"The answer"), from the reference's paths and from the query's rows alike, so the two compare."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .definition import Paths
from .reference import PersonPath, StepKey


@dataclass(frozen=True, slots=True, order=True)
class Node:
    depth: int
    kind: str
    value: str

    @property
    def id(self) -> str:
        return f"{self.depth}:{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class Edge:
    source: Node
    target: Node
    people: int


@dataclass(frozen=True, slots=True)
class PathsGraph:
    people: int  # everyone with a path
    nodes: list[tuple[Node, int]]  # the nodes the edges touch, with the people through each
    edges: list[Edge]


def _key(step: StepKey) -> bytes:
    """A step's rank among steps of equal weight: `kind:value` in byte order."""
    return f"{step[0]}:{step[1]}".encode()


def edge_order(edge: Edge) -> tuple[int, int, bytes, bytes]:
    """Heaviest first; then by depth, then by the source's and the target's `kind:value` in byte
    order."""
    source, target = edge.source, edge.target
    return (-edge.people, source.depth, _key((source.kind, source.value)), _key((target.kind, target.value)))


def node_order(entry: tuple[Node, int]) -> tuple[int, int, bytes]:
    """By depth; at a depth, the most people first, then `kind:value` in byte order."""
    node, people = entry
    return (node.depth, -people, _key((node.kind, node.value)))


def _graph(people: int, edges: list[Edge], node_people: dict[Node, int]) -> PathsGraph:
    touched = {node for edge in edges for node in (edge.source, edge.target)}
    nodes = sorted(((node, node_people[node]) for node in touched), key=node_order)
    return PathsGraph(people, nodes, edges)


def graph_of_paths(paths: Paths, person_paths: Sequence[PersonPath]) -> PathsGraph:
    """The answer from every person's path (the reference's)."""
    node_people: Counter[Node] = Counter()
    edge_people: Counter[tuple[Node, Node]] = Counter()
    for path in person_paths:
        nodes = [Node(path.first_depth + offset, *step) for offset, step in enumerate(path.steps)]
        node_people.update(nodes)
        edge_people.update(pairwise(nodes))
    edges = sorted(
        (Edge(source, target, people) for (source, target), people in edge_people.items()), key=edge_order
    )
    return _graph(len(person_paths), edges[: paths.edge_limit], dict(node_people))


def _node(depth: int, step: str) -> Node:
    kind, _, value = step.partition(":")
    return Node(depth, kind, value)


def graph_of_rows(rows: Sequence[dict[str, Any]]) -> PathsGraph:
    """The answer from the query's rows (query.graph_query), already in edge order."""
    people = int(rows[0]["total"]) if rows else 0
    edges, node_people = [], {}
    for row in rows:
        if not row["has_edge"]:
            continue
        depth = int(row["source_depth"])
        source, target = _node(depth, str(row["source"])), _node(depth + 1, str(row["target"]))
        node_people[source] = int(row["source_people"])
        node_people[target] = int(row["target_people"])
        edges.append(Edge(source, target, int(row["people"])))
    return _graph(people, edges, node_people)
