"""The company settings on their own page, /settings (linked from the main navigation): the
form built from CompanySettings (web.admin.settings_form). A refused Save shows the page again
with what was typed and each error beside its field; a successful one says so beside the Save
button, where the person is looking."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from pydantic import ValidationError as PydanticValidationError
from werkzeug.wrappers import Response

from calsync.feeds.company_settings import get_company_settings, update_company_settings
from calsync.web import db
from calsync.web.admin import bp, current_company
from calsync.web.admin.settings_form import (
    FEED_SETTINGS,
    describe_errors,
    label_of,
    parse_settings_form,
    refused_fields,
    setting_fields,
)


def saved_message(changed: list[str]) -> str:
    """What Save did: the feeds' next refresh is mentioned only when a setting of the published
    feeds changed (the "Published feeds" section), since only those change what a feed shows."""
    if not changed:
        return "Settings saved; nothing had changed."
    if any(name.startswith(FEED_SETTINGS) for name in changed):
        return "Settings saved. Feeds show the change at their next refresh."
    return "Settings saved."


@bp.get("/settings")
def settings() -> str:
    company = current_company()
    return render_template("admin/settings.html", company=company,
                           settings_sections=setting_fields(get_company_settings(company)), problems={})


@bp.post("/settings")
def save_settings() -> Response | tuple[str, int]:
    s = db.session()
    company = current_company()
    changes, problems = parse_settings_form(request.form)
    before = get_company_settings(company).model_dump()
    changed: list[str] = []
    if not problems:
        try:
            after = update_company_settings(s, company, changes).model_dump()
            changed = [name for name, value in after.items() if before.get(name) != value]
        except PydanticValidationError as exc:
            problems = describe_errors(exc)
    if problems:
        s.rollback()
        sections = refused_fields(request.form, get_company_settings(company), problems)
        summary = [f"{label_of(name)}: {text}" for name, text in problems.items()]
        return render_template("admin/settings.html", company=company, settings_sections=sections,
                               problems=summary), 422
    s.commit()
    flash(saved_message(changed), "success@settings")
    return redirect(url_for("admin.settings", _anchor="settings-saved"))
