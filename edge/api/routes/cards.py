"""Catalogue look-up: one card by id, or a text search over ids, names, sets and numbers."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query

from edge.api.deps import ReadAccess, RuntimeDep
from edge.api.schemas import CardOut, CardsOut, ErrorOut
from edge.errors import NotFoundError
from edge.live.runtime import CardInfoLike

logger = logging.getLogger(__name__)

router = APIRouter(tags=["cards"], dependencies=[ReadAccess])


class CardNotFoundError(NotFoundError):
    code = "card_not_found"


def card_out(info: CardInfoLike) -> CardOut:
    return CardOut(
        card_id=info.card_id,
        name=info.name,
        set_id=info.set_id,
        set_name=info.set_name,
        number=info.number,
        rarity=info.rarity,
        image_ref=getattr(info, "image_ref", None),
    )


@router.get(
    "/v1/cards/{card_id}",
    response_model=CardOut,
    responses={404: {"model": ErrorOut}},
    summary="One card of the current catalogue",
)
def get_card(
    card_id: Annotated[str, Path(min_length=1, max_length=200)], runtime: RuntimeDep
) -> CardOut:
    with runtime.lease() as rec:
        info = rec.catalogue.get(card_id)
    if info is None:
        raise CardNotFoundError(f"no card {card_id!r} in the current catalogue", "try /v1/cards?q=")
    return card_out(info)


@router.get("/v1/cards", response_model=CardsOut, summary="Search the current catalogue")
def search_cards(
    runtime: RuntimeDep,
    q: Annotated[str, Query(max_length=200, description="Text to find")] = "",
    limit: Annotated[int, Query(ge=1, le=200, description="Most results")] = 20,
) -> CardsOut:
    with runtime.lease() as rec:
        found = rec.catalogue.search(q, limit)
    return CardsOut(query=q, cards=[card_out(c) for c in found])
