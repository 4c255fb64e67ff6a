"""Browsing events (topic ``crm.browsing``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.base import EventBase, Id

Category = Annotated[str, Field(min_length=1, max_length=64)]


class ItemView(EventBase):
    type: Literal["browse.view"]
    sku: Id
    category: Category | None = None


class Search(EventBase):
    type: Literal["browse.search"]
    query: Annotated[str, Field(min_length=1, max_length=200)]
    category: Category | None = None


class CartAdd(EventBase):
    type: Literal["browse.cart_add"]
    sku: Id
    category: Category | None = None
    qty: Annotated[int, Field(ge=1, le=10_000)] = 1


class Favorite(EventBase):
    type: Literal["browse.favorite"]
    sku: Id
    category: Category | None = None


BrowsingEvent = Annotated[ItemView | Search | CartAdd | Favorite, Field(discriminator="type")]
