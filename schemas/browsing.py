"""Browsing events (topic ``crm.browsing``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.base import MAX_CART_QTY, EventBase, Id, Integer, Text

Category = Annotated[Text, Field(min_length=1, max_length=64)]


class ItemView(EventBase):
    type: Literal["browse.view"]
    sku: Id
    category: Category | None = None


class Search(EventBase):
    type: Literal["browse.search"]
    query: Annotated[Text, Field(min_length=1, max_length=200)]
    category: Category | None = None


class CartAdd(EventBase):
    type: Literal["browse.cart_add"]
    sku: Id
    category: Category | None = None
    qty: Annotated[Integer, Field(ge=1, le=MAX_CART_QTY)] = 1


class Favorite(EventBase):
    type: Literal["browse.favorite"]
    sku: Id
    category: Category | None = None


BrowsingEvent = Annotated[ItemView | Search | CartAdd | Favorite, Field(discriminator="type")]
