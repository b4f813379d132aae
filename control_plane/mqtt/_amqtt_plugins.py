"""amqtt plugins that put :mod:`._embedded_policy` into the embedded broker.

amqtt 0.12 loads plugins named in the broker config's ``plugins`` mapping
(dotted class path to the options of the plugin's ``Config`` dataclass); it
asks every authentication plugin on CONNECT (all must say yes, and at least
one must answer) and every topic plugin on PUBLISH, SUBSCRIBE and before it
delivers a message to a subscriber (RECEIVE). Listing plugins this way also
keeps amqtt's defaults out: no anonymous-access plugin, no ``$SYS`` topics.

Both plugins fail closed: without their policy objects, or when a check
raises, the answer is no. Refusals are logged with the client's username
(never its password), at most :data:`_NAME_CHARS` characters of it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from amqtt.contexts import Action as AmqttAction  # type: ignore[import-untyped]
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin  # type: ignore[import-untyped]
from amqtt.session import Session  # type: ignore[import-untyped]

from control_plane.mqtt._embedded_policy import Action, BrokerPolicy, Credentials

log = logging.getLogger("edgefleet.mqtt.embedded")
_NAME_CHARS = 80
_ACTIONS: dict[str, Action] = {"publish": "publish", "subscribe": "subscribe", "receive": "receive"}


def _name(session: Session | None) -> str:
    username = getattr(session, "username", None)
    return repr(str(username)[:_NAME_CHARS]) if username else "(anonymous)"


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """CONNECT: client id and last will per the policy, then the password."""

    @dataclass
    class Config:
        credentials: Credentials | None = None
        policy: BrokerPolicy | None = None

    async def authenticate(self, *, session: Session) -> bool:
        config = self.config
        if session is None or config.credentials is None or config.policy is None:
            return False
        will_topic = session.will_topic if session.will_flag else None
        refusal = config.policy.connect_refusal(session.username, session.client_id, will_topic)
        if refusal is not None:
            log.warning("embedded broker refused %s: %s", _name(session), refusal)
            return False
        try:
            # A database read and a PBKDF2 hash: off the broker's event loop.
            ok = await asyncio.to_thread(
                config.credentials.check, session.username, session.password
            )
        except Exception:  # the database failed: refuse now, the client retries
            log.exception("embedded broker could not check the password of %s", _name(session))
            return False
        if not ok:
            log.warning("embedded broker refused %s: bad username or password", _name(session))
        return bool(ok)


class TopicAclPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """PUBLISH, SUBSCRIBE and delivery: the ACL of :class:`BrokerPolicy`."""

    @dataclass
    class Config:
        policy: BrokerPolicy | None = None

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: AmqttAction | None = None,
    ) -> bool:
        policy = self.config.policy
        what = _ACTIONS.get(str(getattr(action, "value", action)))
        if policy is None or session is None or topic is None or what is None:
            return False
        allowed: bool = policy.may(session.username, topic, what)
        if not allowed and what != "receive":
            log.warning(
                "embedded broker refused %s %s on %r", _name(session), what, topic[:_NAME_CHARS]
            )
        return allowed


__all__ = ["DeviceAuthPlugin", "TopicAclPlugin"]
