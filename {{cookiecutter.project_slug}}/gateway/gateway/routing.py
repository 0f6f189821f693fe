"""Which upstreams serve which model: the pool's routing table.

A table is built from each upstream's static `models` plus what its last good
`/v1/models` listing named (discovery.py), and never changed afterwards: a refresh builds
a new one and the pool swaps it in with one assignment, so a request reads a consistent
table with a dictionary lookup and no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from gateway.model_listing import Listing
from gateway.settings import UpstreamConfig


class Routable(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def config(self) -> UpstreamConfig: ...


U = TypeVar("U", bound=Routable)


@dataclass(frozen=True)
class RoutingTable(Generic[U]):
    by_model: Mapping[str, tuple[U, ...]]
    # A listed adapter's base model (vLLM's `parent`), for the gateway's /v1/models.
    parents: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, upstreams: Sequence[U], listings: Mapping[str, Listing] | None = None
    ) -> RoutingTable[U]:
        listings = listings or {}
        by_model: dict[str, list[U]] = {}
        parents: dict[str, str] = {}
        for upstream in upstreams:
            listing = listings.get(upstream.name)
            listed = listing.models if listing is not None else ()
            for model in dict.fromkeys([*upstream.config.models, *(m.id for m in listed)]):
                by_model.setdefault(model, []).append(upstream)
            for card in listed:
                if card.parent is not None and card.parent != card.id:
                    parents.setdefault(card.id, card.parent)
        return cls({model: tuple(found) for model, found in by_model.items()}, parents)
