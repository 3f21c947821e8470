"""SQLAlchemy models of calsync and the engine/session factory. Imports SQLAlchemy only."""

from calsync.models import feed_changes as feed_changes  # the triggers' DDL, attached to the metadata
from calsync.models.appointment import STATUS_CANCELLED, STATUS_CONFIRMED, Appointment, Customer
from calsync.models.auth import AdminUser, ApiKey, LoginThrottle
from calsync.models.base import MAX_KEY, Base, UTCDateTime, utcnow
from calsync.models.channel import ProviderChannel
from calsync.models.company import Company
from calsync.models.company_account import CompanyAccount, CompanyAccountMember
from calsync.models.connection import Alert, BusyBlock, BusyTimeline, Connection, SyncItem
from calsync.models.enums import (
    WRITE_ROLES,
    AlertKind,
    AllDayPolicy,
    AppointmentStatus,
    ChangeAction,
    ChangeSource,
    ChannelProvider,
    CompanyAccountStatus,
    ConflictResolution,
    ConflictStatus,
    ConnectionKind,
    ConnectionStatus,
    FeedScope,
    InvitationState,
    ItipMethod,
    LinkedItemState,
    OAuthPurpose,
    OutboxKind,
    OutboxStatus,
    PrivacyLevel,
    ProviderKind,
    Role,
    SyncMode,
)
from calsync.models.feed import FeedFragment, FeedSegment, FeedToken
from calsync.models.invitation import Invitation
from calsync.models.oauth_state import OAuthStateRecord
from calsync.models.session import make_engine, make_session_factory
from calsync.models.staff import Group, Staff, group_member
from calsync.models.twoway import AppointmentChange, Conflict, LinkedItem, OutboxEmail

__all__ = [
    "WRITE_ROLES",
    "AlertKind",
    "AllDayPolicy",
    "AppointmentStatus",
    "ChangeAction",
    "ChannelProvider",
    "ChangeSource",
    "ConflictResolution",
    "ConflictStatus",
    "ConnectionKind",
    "ConnectionStatus",
    "FeedScope",
    "InvitationState",
    "ItipMethod",
    "LinkedItemState",
    "OutboxKind",
    "OutboxStatus",
    "PrivacyLevel",
    "Role",
    "SyncMode",
    "AppointmentChange",
    "Conflict",
    "LinkedItem",
    "OutboxEmail",
    "Alert",
    "BusyBlock",
    "BusyTimeline",
    "Connection",
    "OAuthPurpose",
    "OAuthStateRecord",
    "ProviderKind",
    "ProviderChannel",
    "SyncItem",
    "STATUS_CANCELLED",
    "STATUS_CONFIRMED",
    "AdminUser",
    "ApiKey",
    "Appointment",
    "Base",
    "MAX_KEY",
    "Company",
    "CompanyAccount",
    "CompanyAccountMember",
    "CompanyAccountStatus",
    "Customer",
    "FeedFragment",
    "FeedSegment",
    "FeedToken",
    "Invitation",
    "LoginThrottle",
    "Group",
    "Staff",
    "UTCDateTime",
    "group_member",
    "make_engine",
    "make_session_factory",
    "utcnow",
]
