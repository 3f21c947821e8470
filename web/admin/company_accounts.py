"""The company-wide connection page at /company-accounts (issues 11/12, "corporate" mode),
reached from the Calendar sync page: connect a Google Workspace service account (its JSON key
uploaded) or a Microsoft 365 app registration (tenant, client id, secret), check every staff
member's calendar through it, and connect the reachable ones (roles conflict + linked).

The provider requests run on the web thread within the interactive budget
(web.interactive): a check of many staff members stops when the budget is spent and says how
many are left, rather than holding a server thread for minutes.
"""

from __future__ import annotations

import time
from dataclasses import replace

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from calsync.feeds.calendars.company_accounts import (
    PROVIDER_NAMES,
    CompanyAccess,
    check_account,
    connect_google_account,
    connect_member,
    connect_microsoft_account,
    disconnect_account,
    get_account,
    member_rows,
)
from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.feeds.sources.fetch import interactive as interactive_limits
from calsync.models import CompanyAccount, ProviderKind
from calsync.web import db, interactive
from calsync.web.admin import bp, current_company

KEY_FILE_MAX_BYTES = 16 * 1024  # a service account's JSON key is about 2.3 kB
CHECK_SECONDS = 20.0  # the whole check of a page of staff members, on a web thread


def _access() -> CompanyAccess:
    """Each provider conversation within the interactive budget (a person is waiting)."""
    access = CompanyAccess.of_setup(db.services().sync.providers)
    return replace(access, limits=interactive_limits(access.limits))


def _back(provider: str | None = None) -> Response:
    return redirect(url_for("admin.company_accounts", _anchor=f"account-{provider}" if provider else None))


@bp.get("/company-accounts")
def company_accounts() -> str:
    s = db.session()
    company = current_company()
    accounts: list[tuple[str, str, CompanyAccount | None, list]] = []  # type: ignore[type-arg]
    for provider in ProviderKind:
        account = get_account(s, company, provider)
        rows = member_rows(s, company, account) if account is not None else []
        accounts.append((provider.value, PROVIDER_NAMES[provider], account, rows))
    return render_template("admin/company_accounts.html", company=company, accounts=accounts,
                           google_scopes=_google_scopes())


def _google_scopes() -> str:
    from calsync.feeds.calendars.providers.google_api import SCOPES

    return ",".join(SCOPES)


@bp.post("/company-accounts/google")
def connect_google() -> Response:
    s = db.session()
    upload = request.files.get("key_file")
    data = upload.read(KEY_FILE_MAX_BYTES + 1) if upload is not None else b""
    if not data:
        flash("Choose the service account's JSON key file to upload.", "error")
        return _back("google")
    if len(data) > KEY_FILE_MAX_BYTES:
        flash("That file is too large for a service account key (they are about 2 kB); "
              "upload the JSON key file itself.", "error")
        return _back("google")
    try:
        account = connect_google_account(s, current_company(), db.services().vault,
                                         data.decode("utf-8", errors="replace"))
    except ValidationError as exc:
        flash(str(exc), "error")
        return _back("google")
    s.commit()
    flash(f"Google Workspace service account {account.display} saved. "
          "Check the staff members' calendars below.", "success")
    return _back("google")


@bp.post("/company-accounts/microsoft")
def connect_microsoft() -> Response:
    s = db.session()
    form = request.form
    try:
        account = connect_microsoft_account(
            s, current_company(), db.services().vault, tenant=form.get("tenant", ""),
            client_id=form.get("client_id", ""), client_secret=form.get("client_secret", ""))
    except ValidationError as exc:
        flash(str(exc), "error")
        return _back("microsoft")
    s.commit()
    flash(f"Microsoft 365 {account.display} saved. Check the staff members' mailboxes below.", "success")
    return _back("microsoft")


def _account_or_flash(provider: str) -> CompanyAccount | None:
    if provider not in ProviderKind.__members__.values():
        flash("Unknown provider.", "error")
        return None
    account = get_account(db.session(), current_company(), provider)
    if account is None:
        flash(f"Connect a company-wide {PROVIDER_NAMES[ProviderKind(provider)]} account first.", "error")
    return account


@bp.post("/company-accounts/<provider>/check")
def check_company_account(provider: str) -> Response:
    s = db.session()
    account = _account_or_flash(provider)
    if account is None:
        return _back(provider)
    with interactive.slot() as taken:
        if not taken:
            flash(interactive.BUSY, "error")
            return _back(provider)
        rows = check_account(s, current_company(), _access(), db.services().vault, account,
                             until=time.monotonic() + CHECK_SECONDS)
    s.commit()
    checked = [r for r in rows if r.check is not None and r.check.checked_at == account.checked_at]
    if account.status == "error":
        flash(account.last_error or "The account was refused.", "error")
    elif len(checked) < len(rows):
        flash(f"Checked {len(checked)} of {len(rows)} staff members; check again for the others.", "info")
    else:
        unreachable = sum(1 for r in checked if r.check is not None and not r.check.reachable)
        flash(f"Checked {len(rows)} staff members: {len(rows) - unreachable} reachable, "
              f"{unreachable} not (the table says why).", "success" if not unreachable else "info")
    return _back(provider)


@bp.post("/company-accounts/<provider>/connect")
def connect_company_members(provider: str) -> Response:
    """Connect one staff member (staff_id) or every reachable one not connected yet."""
    s = db.session()
    company = current_company()
    account = _account_or_flash(provider)
    if account is None:
        return _back(provider)
    wanted = request.form.get("staff_id", type=int)
    rows = member_rows(s, company, account)
    targets = [r.staff.id for r in rows if r.connection is None and (
        r.staff.id == wanted if wanted is not None else r.check is not None and r.check.reachable)]
    if not targets:
        flash("Nobody to connect: check the staff members first; only reachable calendars are connected.",
              "info")
        return _back(provider)
    connected, refused = [], []
    with interactive.slot() as taken:
        if not taken:
            flash(interactive.BUSY, "error")
            return _back(provider)
        deadline = time.monotonic() + CHECK_SECONDS
        access = _access()
        for staff_id in targets:
            if time.monotonic() > deadline:
                break
            try:
                connected.append(connect_member(s, company, access, db.services().vault, account, staff_id))
            except (ValidationError, NotFoundError) as exc:
                refused.append(str(exc))
    s.commit()
    for problem in refused:
        flash(problem, "error")
    if connected:
        flash(f"Connected {len(connected)} calendar(s): busy time is read and bookings are written there; "
              "the first sync runs within a minute.", "success")
    return _back(provider)


@bp.post("/company-accounts/<provider>/disconnect")
def disconnect_company_account(provider: str) -> Response:
    s = db.session()
    if _account_or_flash(provider) is None:
        return _back()
    count = disconnect_account(s, current_company(), provider)
    s.commit()
    flash(f"The company-wide {PROVIDER_NAMES[ProviderKind(provider)]} account was removed with the "
          f"{count} calendar connection(s) made through it. Revoke its key or secret at the provider too.",
          "success")
    return _back()
