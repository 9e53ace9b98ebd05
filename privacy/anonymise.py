"""Anonymisation rules compiled once and applied to an event's fields: its ids, and the raw JSON of
its properties, traits and context (what the consumers store, and what the page columns are
derived from).

    rules = compile_rules(settings.anonymisation.rules, hash_key)   # cached per rules and key
    user_id = rules.apply_value("userId", event.userId)
    properties = rules.apply_json("properties", raw_properties)    # None: unchanged

Rules run in their order, each on what the ones before it left. Work is skipped where a rule
cannot apply: `apply_json` decodes an object only when a rule's first key appears in its bytes
(or the bytes hold an escape, which could spell that key otherwise), so events without the
fields cost a substring search per rule.

Given a `changes` list, each value a rule changed or removed is noted in it (the preview shows
them); the consumers pass none.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from .detectors import DETECTOR_ORDER, contains, may_hold_any, placeholder_of, replace_all, replacement_steps
from .hashing import KeyedHasher
from .ipnet import truncated_ip
from .rules import ID_FIELDS, OBJECT_FIELDS, Rule
from .urlquery import SECRET_QUERY_NAMES, QueryFilter
from .userpattern import compile_user_pattern

PATTERN_PLACEHOLDER = "[redacted]"
# What a `hash` rule leaves when the project has no key (a config written by hand): the value is
# gone rather than hashed with a key anyone could know.
NO_KEY_PLACEHOLDER = "[unhashed]"
_RESULT_CACHE_SIZE = 16_384  # keyed hashes kept
_RESULTS_KEPT = 32_768  # ids' and objects' results kept, for every rule set together
CACHED_JSON_BYTES = 2048
_BACKSLASH = 0x5C  # (an int: see _may_apply)


class Change(NamedTuple):
    """A value rule number `rule` (its place in the list) changed (`action`) or removed (`drop`)."""

    rule: int
    path: str
    action: str


class _Drop:
    """What a transform returns for a value to remove."""


DROP = _Drop()
Transform = Callable[[Any], Any]  # a value → its new value, or DROP
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class _Compiled:
    index: int
    root: str
    keys: tuple[str, ...]  # the path after its root field
    action: str
    transform: Transform
    needle: bytes | None  # bytes the raw JSON holds when the rule may apply; None: always decode
    path: str
    literal: bool  # no wildcard: the value is found by direct lookups


class CompiledRules:
    """A project's rules, ready to apply. Built by `compile_rules`; immutable."""

    def __init__(self, rules: tuple[Rule, ...], hash_key: bytes | None) -> None:
        compiled = [_compile(index, rule, hash_key) for index, rule in enumerate(rules)]
        self.active = bool(compiled)
        self._by_root: dict[str, tuple[_Compiled, ...]] = {}
        for rule in compiled:
            self._by_root[rule.root] = (*self._by_root.get(rule.root, ()), rule)
        # The fields of an event that rules name, in a fixed order (rows.py reads only those).
        self.id_fields = tuple(f for f in ID_FIELDS if f in self._by_root)
        self.object_fields = tuple(f for f in OBJECT_FIELDS if f in self._by_root)
        self.event_objects = tuple(f for f in self.object_fields if f != "context")  # (a batch's context too)
        # Per object field: whether a rule reads it whatever its bytes hold (a wildcard or the
        # whole object), else the bytes one of its rules' first keys shows as (each once).
        self._always = {root: any(r.needle is None for r in rules) for root, rules in self._by_root.items()}
        self._needles = {
            root: tuple(dict.fromkeys(r.needle for r in rules if r.needle is not None))
            for root, rules in self._by_root.items()
        }
        # Per field: the results for the small values seen (an id's text → its new value; an
        # object's bytes → its new JSON, None: unchanged), within one bound for every rule set (_keep).
        self._results: dict[str, dict[Any, Any]] = {root: {} for root in self._by_root}
        # (field, its kept results) per id field: rows.py looks a repeated id up itself, without
        # a call (the dicts are only ever cleared, never replaced; a miss goes to apply_value).
        self.id_results = tuple((field, self._results[field]) for field in self.id_fields)
        # The same for the event's objects (properties, traits: their bytes → the new JSON or None).
        self.object_results = tuple((field, self._results[field]) for field in self.event_objects)
        _result_holders.add(self)

    def _forget_results(self) -> None:
        for results in self._results.values():
            results.clear()

    def touches(self, root: str) -> bool:
        return root in self._by_root

    def apply_value(self, field: str, value: Any, changes: list[Change] | None = None) -> Any:
        """An id field's value after the rules on it (None once dropped)."""
        if changes is None and type(value) is str and len(value) <= CACHED_JSON_BYTES:
            results = self._results.get(field)
            if results is None:
                return value  # no rule on this field
            known = results.get(value, _UNKNOWN)
            if known is not _UNKNOWN:
                return known
            result = self._apply_value(field, value)
            _keep(results, value, result)
            return result
        return self._apply_value(field, value, changes)

    def _apply_value(self, field: str, value: Any, changes: list[Change] | None = None) -> Any:
        for rule in self._by_root.get(field, ()):
            if value is None:
                break
            new = _apply_leaves(value, rule.transform)
            if new is not value and new != value and changes is not None:
                changes.append(Change(rule.index, field, "drop" if new is DROP else rule.action))
            value = None if new is DROP else new
        return value

    def apply_json(self, root: str, raw: bytes, changes: list[Change] | None = None) -> bytes | None:
        """The raw JSON of `root` (properties, traits or context) after its rules; None when no rule
        changed anything (the raw JSON is stored as it came)."""
        if root not in self._by_root:
            return None
        return self._apply_json(root, raw, changes)

    def apply_json_raw(
        self, root: str, raw: msgspec.Raw, changes: list[Change] | None = None
    ) -> msgspec.Raw | None:
        """`apply_json` on a `msgspec.Raw`, giving one (as the consumers hold an event's objects)."""
        data = bytes(raw)
        if changes is None and len(data) <= CACHED_JSON_BYTES:
            # A repeat is answered by one lookup on its bytes, before any search for the rules'
            # keys (~1.3 µs an event less than searching first, on bench/anonymisation.py's events).
            known = self._results[root].get(data, _UNKNOWN)
            if known is not _UNKNOWN:
                return known  # type: ignore[no-any-return]
            return self.apply_json_unknown(root, data)
        return self._apply_json_raw(root, data, changes)

    def apply_json_unknown(self, root: str, data: bytes) -> msgspec.Raw | None:
        """`apply_json_raw` (no changes noted) on bytes not among the results kept for `root`
        (rows.py looks those of up to CACHED_JSON_BYTES up itself, in `object_results`); kept when
        that small."""
        # An object no rule can touch (most events' properties, all different) is not kept:
        # it would only push useful results out.
        if not self._may_apply(root, data):
            return None
        result = self._apply_json_raw(root, data)
        if len(data) <= CACHED_JSON_BYTES:
            _keep(self._results[root], data, result)
        return result

    def _apply_json_raw(
        self, root: str, data: bytes, changes: list[Change] | None = None
    ) -> msgspec.Raw | None:
        new = self._rewrite_json(root, data, changes)
        return None if new is None else msgspec.Raw(new)

    def _may_apply(self, root: str, raw: bytes) -> bool:
        """Whether a rule of `root` may find its field in `raw`: its first key's bytes are there,
        or an escape (which could spell that key otherwise).

        Not `needle in raw`: CPython first tries a bytes operand of `in` as an integer (raising and
        clearing an exception), ~0.22 µs a search where `raw.find(needle)` takes ~0.1 µs, and a
        single byte searched for as an integer ~0.02 µs."""
        if self._always[root]:
            return True
        for needle in self._needles[root]:
            if raw.find(needle) >= 0:
                return True
        return _BACKSLASH in raw

    def _apply_json(self, root: str, raw: bytes, changes: list[Change] | None = None) -> bytes | None:
        if not self._may_apply(root, raw):
            return None
        return self._rewrite_json(root, raw, changes)

    def _rewrite_json(self, root: str, raw: bytes, changes: list[Change] | None) -> bytes | None:
        """`_apply_json` once `_may_apply` said yes."""
        rules = self._by_root[root]
        try:
            value = _decoder.decode(raw)
        except msgspec.DecodeError:
            return None  # the edge validated it: not JSON means nothing a rule could read
        if not isinstance(value, dict):
            return None
        holder = {root: value}
        changed = False
        for rule in rules:
            if rule.literal:
                changed = _apply_at(holder, (root, *rule.keys), rule, changes) or changed
            else:
                changed = _walk(holder, (root, *rule.keys), 0, rule, changes, "") or changed
        if not changed:
            return None
        result = holder.get(root)
        return _encoder.encode(result if isinstance(result, dict) else {})


def compile_rules(rules: tuple[Rule, ...], hash_key: bytes | None) -> CompiledRules:
    """The compiled form of `rules`: cached on their value, so settings that arrive afresh with
    every batch (pickled to worker processes) compile once; and on their identity, since hashing
    ten rules (~0.6 µs) per envelope would cost as much as applying them to a small event."""
    seen = _by_identity.get(id(rules))
    if seen is not None and seen[0] is rules and seen[1] is hash_key:
        return seen[2]
    compiled = _compiled(rules, hash_key)
    if len(_by_identity) >= _IDENTITY_CACHE_SIZE:
        _by_identity.clear()
    # The entry holds `rules`, so its id cannot be reused by another object while it is there.
    _by_identity[id(rules)] = (rules, hash_key, compiled)
    return compiled


_IDENTITY_CACHE_SIZE = 256
_by_identity: dict[int, tuple[tuple[Rule, ...], bytes | None, CompiledRules]] = {}


@functools.lru_cache(maxsize=256)
def _compiled(rules: tuple[Rule, ...], hash_key: bytes | None) -> CompiledRules:
    return CompiledRules(rules, hash_key)


# Events repeat their ids and objects (a visitor's id, a page's context, a request's batch
# context): the results for small ones are kept, so a repeat costs a lookup. One bound for every
# project (each keeps its own results with its compiled rules), so the memory is bounded whatever
# the number of projects: at most _RESULTS_KEPT results of at most CACHED_JSON_BYTES (~64 MB at
# worst, ~10 MB for events' usual objects of a few hundred bytes). At the bound, every result is
# forgotten at once: the repeats come back within a few batches, and an LRU's bookkeeping would
# cost each lookup more than the refill does.
_UNKNOWN = object()
_result_holders: weakref.WeakSet[CompiledRules] = weakref.WeakSet()
_results_kept = 0


def _keep(results: dict[Any, Any], data: bytes | str, result: Any) -> None:
    global _results_kept
    if _results_kept >= _RESULTS_KEPT:
        for holder in list(_result_holders):
            holder._forget_results()
        _results_kept = 0
    results[data] = result
    _results_kept += 1


@functools.lru_cache(maxsize=_RESULT_CACHE_SIZE)
def _cached_hash(hasher: KeyedHasher, text: str) -> str:
    return hasher(text)


def _apply_at(
    holder: dict[str, Any], keys: tuple[str, ...], rule: _Compiled, changes: list[Change] | None
) -> bool:
    """Apply a rule without wildcards: its value is found by lookups alone."""
    parent: Any = holder
    for key in keys[:-1]:
        parent = parent.get(key) if type(parent) is dict else None
        if parent is None:
            return False
    last = keys[-1]
    if type(parent) is not dict or last not in parent:
        return False
    child = parent[last]
    new = _apply_leaves(child, rule.transform)
    if new is child or new == child:
        return False
    if changes is not None:
        changes.append(Change(rule.index, rule.path, "drop" if new is DROP else rule.action))
    if new is DROP:
        del parent[last]
    else:
        parent[last] = new
    return True


def _walk(
    container: Any, keys: tuple[str, ...], depth: int, rule: _Compiled, changes: list[Change] | None, at: str
) -> bool:
    """Apply `rule` to what `keys[depth:]` names inside `container`; whether anything changed."""
    key, last = keys[depth], depth == len(keys) - 1
    if isinstance(container, dict):
        names: list[Any] = list(container) if key == "*" else ([key] if key in container else [])
    elif isinstance(container, list) and key == "*":
        names = list(range(len(container)))
    else:
        return False
    changed = False
    removed: list[Any] = []
    for name in names:
        path = (f"{at}.{name}" if at else str(name)) if changes is not None else ""
        child = container[name]
        if not last:
            changed = _walk(child, keys, depth + 1, rule, changes, path) or changed
            continue
        new = _apply_leaves(child, rule.transform)
        if new is child or new == child:
            continue
        changed = True
        if changes is not None:
            changes.append(Change(rule.index, path, "drop" if new is DROP else rule.action))
        if new is DROP:
            removed.append(name)
        else:
            container[name] = new
    for name in reversed(removed):  # (list indices from the end, so the others stay in place)
        del container[name]
    return changed


def _apply_leaves(value: Any, transform: Transform) -> Any:
    """`transform` on a value; on an object or array, on every value inside it (its drops remove
    the values inside); unchanged values are returned as they are."""
    if isinstance(value, dict):
        if transform is _drop_all:
            return DROP
        out: dict[str, Any] = {}
        for k, v in value.items():
            new = _apply_leaves(v, transform)
            if new is not DROP:
                out[k] = new
        return out
    if isinstance(value, list):
        if transform is _drop_all:
            return DROP
        return [new for new in (_apply_leaves(v, transform) for v in value) if new is not DROP]
    return transform(value)


def _drop_all(_value: Any) -> Any:
    return DROP


def _as_text(value: Any) -> str | None:
    """The text a rule works on: a string, or a number's JSON form; None for null and booleans."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _encoder.encode(value).decode()
    return None


def _on_text(text_rule: Callable[[str], str]) -> Transform:
    """A transform of text applied to a value: a number becomes text only when it changes."""

    def transform(value: Any) -> Any:
        if type(value) is str:
            new = text_rule(value)
            return value if new == value else new
        text = _as_text(value)
        if text is None:
            return value
        new = text_rule(text)
        return value if new == text else new

    return transform


def _mask(keep_last: int) -> Callable[[str], str]:
    def mask(text: str) -> str:
        kept = min(keep_last, len(text) // 2)  # never more than half of what was there
        return "*" * (len(text) - kept) + (text[len(text) - kept :] if kept else "")

    return mask


def _truncate(length: int | None) -> Callable[[str], str]:
    def truncate(text: str) -> str:
        network = truncated_ip(text)
        if network is not None:
            return network
        return text if length is None else text[:length]

    return truncate


def _hasher(hash_key: bytes | None) -> Callable[[str], str]:
    if not hash_key:
        return lambda _text: NO_KEY_PLACEHOLDER
    # Ids and addresses repeat across events: a hit costs a dictionary lookup, not an HMAC.
    return functools.partial(_cached_hash, KeyedHasher(hash_key))


def _compile(index: int, rule: Rule, hash_key: bytes | None) -> _Compiled:
    segments = rule.segments
    root, keys = segments[0], segments[1:]
    needle = None
    if root not in ID_FIELDS and keys and keys[0] != "*":
        needle = _encoder.encode(keys[0])
    transform = _transform(rule, hash_key)
    return _Compiled(index, root, keys, rule.action, transform, needle, rule.path, "*" not in keys)


def _transform(rule: Rule, hash_key: bytes | None) -> Transform:
    detectors = [d for d in DETECTOR_ORDER if d in rule.detectors]
    pattern = compile_user_pattern(rule.pattern) if rule.pattern is not None else None
    queries = _query_filter(rule)
    matching = bool(detectors or pattern is not None)
    if rule.action == "drop":
        if not matching:
            return _drop_all

        def found(text: str) -> bool:
            return any(contains(text, d) for d in detectors) or (
                pattern is not None and bool(pattern.search(text))
            )

        return lambda value: DROP if (t := _as_text(value)) is not None and found(t) else value
    replace: Callable[[str], str] | None
    if rule.action == "mask":
        replace = _mask(rule.keep_last)
    elif rule.action == "truncate":
        replace = _truncate(rule.length)
    elif rule.action == "hash":
        replace = _hasher(hash_key)
    else:
        replace = None  # redact: each match becomes its placeholder
    if not matching and queries is None:
        assert replace is not None, "a redact rule without matchers is refused by rule_problem"
        return _on_text(replace)

    def replacement(default_placeholder: str) -> Callable[[str], str]:
        if replace is not None:
            return replace
        placeholder = rule.placeholder if rule.placeholder is not None else default_placeholder
        return lambda _match: placeholder

    steps = replacement_steps((detector, replacement(placeholder_of(detector))) for detector in detectors)
    pattern_replace = replacement(PATTERN_PLACEHOLDER)

    def rewrite(text: str) -> str:
        if queries is not None:
            text = queries.apply(text)
        if steps and may_hold_any(text):
            text = replace_all(text, steps)
        if pattern is not None:
            text = pattern.sub(lambda match: pattern_replace(match.group(0)), text)
        return text

    return _on_text(rewrite)


def _query_filter(rule: Rule) -> QueryFilter | None:
    drop = frozenset(rule.drop_query)
    if "url_secrets" in rule.detectors:
        drop |= SECRET_QUERY_NAMES
    if not drop and not rule.keep_query:
        return None
    return QueryFilter(drop, frozenset(rule.keep_query) if rule.keep_query else None)
