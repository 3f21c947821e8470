"""Company-wide settings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, create_model

from calsync.feeds.company_settings import CompanySettings, get_company_settings, update_company_settings
from calsync.web import db
from calsync.web.api import bp, current_company
from calsync.web.api.registry import api_route
from calsync.web.api.schemas import unchanged

# Every setting, optional: a PATCH changes only what it names. Built from CompanySettings — each
# field with its own constraints and description, so the document shows the limits that are
# enforced and an explicit null is refused where the setting cannot be null.
SettingsPatch = create_model(  # type: ignore[call-overload]
    "SettingsPatch",
    __config__=ConfigDict(extra="forbid"),
    **{
        name: (Annotated[field.annotation, field], unchanged())
        for name, field in CompanySettings.model_fields.items()
    },
)


@api_route(bp, "/settings", "GET", summary="Company-wide settings", tag="settings",
           response=CompanySettings)
def get_settings() -> CompanySettings:
    return get_company_settings(current_company())


@api_route(bp, "/settings", "PATCH", summary="Change company-wide settings", tag="settings",
           body=SettingsPatch, response=CompanySettings, errors=(422,))
def patch_settings(body: Any) -> CompanySettings:
    session = db.session()
    changes = body.model_dump(exclude_unset=True)
    new = update_company_settings(session, current_company(), changes)
    session.commit()
    return new
