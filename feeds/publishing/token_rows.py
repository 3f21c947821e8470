"""A feed token's row: the token, its company and the version of its scope, as every feed
request reads it (version.lookup_feed).

FEED_QUERY reads it with the version's aggregates over the scope's staff; a statement that
reads the scope's staff anyway (scope_changes' for the render after a change) reads
TOKEN_SHOWN and SCOPE_STAFF per staff member instead, and token_row makes the same row of
those. At says where each column is.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, and_, bindparam, case, cast, func, select

from calsync.models import Company, FeedToken, Staff, group_member


def scope_staff_filter(scope: str, scope_id: Any, company_id: Any) -> Any:
    """The staff of a scope of `scope`'s kind, given its id and company: bound values, or a token
    row's own columns (token_scope_filter). A group's members are correlated to the token row
    when there is one around them (explicitly: in the token query they sit two subqueries deep)."""
    if scope == "staff":
        return and_(Staff.id == scope_id, Staff.company_id == company_id)
    if scope == "group":
        members = (select(group_member.c.staff_id).where(group_member.c.group_id == scope_id)
                   .correlate(FeedToken))
        return and_(Staff.company_id == company_id, Staff.id.in_(members))
    return Staff.company_id == company_id


def token_scope_filter(scope: str) -> Any:
    """The staff of the scope a token row names, by that row's own columns (correlated to
    FeedToken): what the token's version aggregates, and whom scope_changes reads beside it."""
    return scope_staff_filter(scope, FeedToken.scope_id, FeedToken.company_id)


def _scope_aggregate(value: Any) -> Any:
    """`value` over the staff of the token's scope, as a column of the token query.

    A CASE whose branches are scalar subqueries correlated to the token row: SQLite and
    PostgreSQL evaluate only the branch that matches, so a staff feed never aggregates the
    whole company. Correlation is explicit because the group branch nests a second subquery.
    """

    def over(scope: str) -> Any:
        return select(value).where(token_scope_filter(scope)).correlate(FeedToken).scalar_subquery()

    return case(
        (FeedToken.scope == "staff", over("staff")),
        (FeedToken.scope == "group", over("group")),
        else_=over("company"),
    )


# The token's and its company's own columns, read as they are (the settings as their stored
# text: parsed once per distinct text, version._company_settings). The first columns of FEED_QUERY,
# and of scope_changes' statement that reads the token's row beside its scope's staff: that one has
# a row per staff member instead of the aggregates, and they are made from SCOPE_STAFF (token_row).
TOKEN_SHOWN = (
    FeedToken.id, FeedToken.token_hash, FeedToken.revoked_at, FeedToken.last_used_at,
    FeedToken.scope, FeedToken.scope_id, FeedToken.privacy, FeedToken.company_id,
    Company.name, Company.timezone, cast(Company.settings, Text).label("settings"), Company.feed_epoch,
    Company.feed_epoch_changed_at,
)
SCOPE_STAFF = (Staff.id, Staff.feed_revision, Staff.feed_changed_at)


# Built once, so SQLAlchemy reuses its compiled form: one statement answers "which feed, which
# company settings, which version" for every request, 304s included.
FEED_QUERY = (
    select(
        *TOKEN_SHOWN,
        _scope_aggregate(func.coalesce(func.sum(Staff.feed_revision), 0)).label("revisions"),
        _scope_aggregate(func.count(Staff.id)).label("staff_count"),
        _scope_aggregate(func.max(Staff.feed_changed_at)).label("changed"),
    )
    .join(Company, Company.id == FeedToken.company_id)
    .where(FeedToken.token_hash == bindparam("digest"))
)


class FeedLookup:
    """FEED_QUERY compiled once per dialect and run on the DBAPI cursor.

    It runs on every feed request, 304s included, where SQLAlchemy's execution wrapper would be
    the largest cost. The few typed columns are decoded by version._feed_of (SQLite hands back text
    for datetimes and JSON, psycopg native values).
    """

    def __init__(self, dialect: Any) -> None:
        compiled = FEED_QUERY.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.order = list(compiled.positiontup or [])
        self.base = dict(compiled.params)
        # The parameters with the digest left out: only it changes between requests.
        self._before = tuple(self.base[k] for k in self.order[: self.order.index("digest")]) \
            if self.positional else ()
        self._after = tuple(self.base[k] for k in self.order[self.order.index("digest") + 1:]) \
            if self.positional else ()

    def params(self, digest: str) -> Any:
        return (*self._before, digest, *self._after) if self.positional else dict(self.base, digest=digest)

    def run(self, dbapi_connection: Any, digest: str) -> tuple[Any, ...] | None:
        """The row, its columns where `At` says."""
        params = self.params(digest)
        # psycopg opens a transaction for a SELECT: a BEGIN before it and, when the pool takes
        # the connection back, a ROLLBACK after it — two round trips around a one-row read,
        # more than the read itself on PostgreSQL. An idle connection reads in autocommit mode.
        idle = (getattr(getattr(dbapi_connection, "info", None), "transaction_status", None) == 0
                and getattr(dbapi_connection, "autocommit", True) is False)
        if idle:
            dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        finally:
            cursor.close()
            if idle:
                dbapi_connection.autocommit = False
        return None if row is None else tuple(row)


class At:
    """Where each column of a token's row is (FEED_QUERY's, and token_row's)."""

    (ID, HASH, REVOKED, LAST_USED, SCOPE, SCOPE_ID, PRIVACY, COMPANY, NAME, TIMEZONE, SETTINGS,
     EPOCH, EPOCH_CHANGED, REVISIONS, STAFF_COUNT, CHANGED) = range(len(TOKEN_SHOWN) + 3)


_lookups: dict[str, FeedLookup] = {}


def feed_lookup(dialect: Any) -> FeedLookup:
    """FEED_QUERY for `dialect`, compiled once per process."""
    found = _lookups.get(dialect.name)
    if found is None:
        found = _lookups[dialect.name] = FeedLookup(dialect)
    return found


_TOKEN_WIDTH = len(TOKEN_SHOWN)
STAFF_ID, _STAFF_REVISION, _STAFF_CHANGED = range(_TOKEN_WIDTH, _TOKEN_WIDTH + len(SCOPE_STAFF))
# Where a row of a statement that reads the token's row per staff member has its own columns.
AFTER_TOKEN = _TOKEN_WIDTH + len(SCOPE_STAFF)


def token_row(rows: list[Any]) -> tuple[Any, ...] | None:
    """FEED_QUERY's row from those of a statement that reads TOKEN_SHOWN and then SCOPE_STAFF
    per staff member of the token's scope (NULLs for a scope without staff), in staff id order,
    perhaps several rows per staff member: the same sum, count and latest change."""
    if not rows:
        return None
    revisions, count, changed = 0, 0, None
    last = None
    for row in rows:
        staff_id = row[STAFF_ID]
        if staff_id is None or staff_id == last:
            continue
        last = staff_id
        revisions += row[_STAFF_REVISION]
        count += 1
        moment = row[_STAFF_CHANGED]
        if moment is not None and (changed is None or moment > changed):
            changed = moment
    return (*rows[0][:_TOKEN_WIDTH], revisions, count, changed)
