"""Feed tokens: list every feed with its URLs, issue another token, revoke one."""

from __future__ import annotations

from calsync.feeds.publishing import tokens
from calsync.models import FeedToken
from calsync.web import db
from calsync.web.api import bp, current_company
from calsync.web.api.registry import api_route
from calsync.web.api.schemas import FeedIn, FeedList, FeedOut


def feed_out(row: FeedToken, plain: str | None) -> FeedOut:
    links = tokens.feed_links(db.services().settings.base_url, plain,
                              name=tokens.feed_name(db.session(), row)) if plain else None
    return FeedOut(
        token_id=row.id,
        scope=row.scope,
        scope_id=row.scope_id,
        name=row.name,
        privacy=row.privacy,
        url=links.url if links else None,
        webcal_url=links.webcal_url if links else None,
        google_url=links.google_url if links else None,
        outlook_url=links.outlook_url if links else None,
        office365_url=links.office365_url if links else None,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


@api_route(bp, "/feeds", "GET", summary="Every feed of the company with its subscribe URLs",
           tag="feeds", response=FeedList)
def list_feeds() -> FeedList:
    sealer = db.services().sealer
    rows = tokens.list_feed_tokens(db.session(), current_company())
    return FeedList(feeds=[feed_out(r, tokens.reveal_token(sealer, r)) for r in rows])


@api_route(bp, "/feeds", "POST", summary="Issue another feed token (rotation: issue, then revoke)",
           tag="feeds", body=FeedIn, response=FeedOut, status=201, errors=(404, 422), creates="token_id")
def issue_feed(body: FeedIn) -> FeedOut:
    session = db.session()
    row, plain = tokens.issue_feed_token(
        session, current_company(), db.services().sealer,
        scope=body.scope, scope_id=body.scope_id, privacy=body.privacy, name=body.name,
    )
    session.commit()
    return feed_out(row, plain)


@api_route(bp, "/feeds/<int:token_id>", "DELETE", summary="Revoke a feed token", tag="feeds",
           status=204, errors=(404,))
def revoke_feed(token_id: int) -> None:
    session = db.session()
    tokens.revoke_feed_token(session, current_company(), token_id)
    session.commit()
