"""Product reviews (topic ``crm.reviews``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.base import EventBase, Id, Integer, Text


class ReviewPosted(EventBase):
    type: Literal["review.posted"]
    review_id: Id
    order_id: Id | None = None
    sku: Id
    rating: Annotated[Integer, Field(ge=1, le=5, description="1 (worst) to 5 (best).")]
    text: Annotated[Text, Field(max_length=5000)] = ""


ReviewEvent = Annotated[ReviewPosted, Field(discriminator="type")]
