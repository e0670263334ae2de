"""Sites as queries: which sites a user belongs to, and the clients and people at those sites.

A user with no site is portal-wide; a user with sites is limited to them. These queries are the site
half of :func:`core.clients.visible_client_ids` (clinical data) and the whole of what a site-limited
administrator or auditor manages, exports and finds in the audit trail. They import only the models,
so the audit trail can use them too.
"""

from __future__ import annotations

import sqlalchemy as sa

from core.models import Client, User, UserSite


def user_site_ids(user: User | int | sa.BindParameter[int]) -> sa.Select[tuple[int]]:
    """The ids of the sites ``user`` belongs to (none: the user is portal-wide); ``user`` may be given by its id (a
    number, or a parameter of a statement made once)."""
    user_id = user.id if isinstance(user, User) else user
    return sa.select(UserSite.site_id).where(UserSite.user_id == user_id)


def at_sites_of(user: User) -> sa.ColumnElement[bool]:
    """A condition on ``Client``: the client is at one of ``user``'s sites (always true when portal-wide)."""
    return at_sites_of_id(user.id)


def at_sites_of_id(user_id: int | sa.BindParameter[int]) -> sa.ColumnElement[bool]:
    """:func:`at_sites_of` for the user whose id is ``user_id`` (a number, or a parameter of a statement made once)."""
    theirs = user_site_ids(user_id)
    return sa.or_(~sa.exists(theirs), Client.site_id.in_(theirs))


def site_client_ids(user: User) -> sa.Select[tuple[int]]:
    """The ids of the clients at ``user``'s sites (every client for a portal-wide user); none when inactive."""
    if not user.active:
        return sa.select(Client.id).where(sa.false())
    return sa.select(Client.id).where(at_sites_of(user))


def site_user_ids(user: User) -> sa.Select[tuple[int]]:
    """The ids of the users who share a site with ``user`` (every user when ``user`` is portal-wide)."""
    theirs = user_site_ids(user)
    sharing = sa.select(UserSite.user_id).where(UserSite.site_id.in_(theirs))
    return sa.select(User.id).where(sa.or_(~sa.exists(theirs), User.id.in_(sharing)))
