"""amqtt's broker with two of its habits corrected for a broker shared by untrusted devices.

amqtt 0.12 (``amqtt.broker.Broker``) was written for trusted clients, and two
of its code paths bypass the plugins that enforce authentication and the ACL:

1. *Sessions are touched before the password is checked.* A CONNECT with
   ``clean_session`` deletes the stored session of that client id, and one
   without it takes the stored session over (overwriting its username and
   dropping a connected client), and only then are the authentication
   plugins asked. Anyone who can reach the port could wipe or hijack the
   bridge's or a device's session. :class:`GuardedBroker` asks the plugins
   first and answers a refused CONNECT before looking at any session.
2. *Retained messages skip the ACL.* On every connect amqtt sends the new
   client the retained messages matching *every* filter any client has
   subscribed to (so device A would get device B's retained desired state as
   soon as B subscribed), and it never asks the RECEIVE check for retained
   messages. :class:`GuardedBroker` sends a session only what matches its own
   subscriptions and what the topic plugins let it receive.

Both overrides mirror amqtt 0.12's private methods; the broker's unit tests
fail if a new amqtt stops calling them (a session survives a refused CONNECT
with its client id; a device never receives another's retained message).
"""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt.broker import Broker  # type: ignore[import-untyped]
from amqtt.contexts import Action  # type: ignore[import-untyped]
from amqtt.errors import AMQTTError, MQTTError, NoDataError  # type: ignore[import-untyped]
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket  # type: ignore[import-untyped]
from amqtt.mqtt.protocol.broker_handler import (  # type: ignore[import-untyped]
    BrokerProtocolHandler,
)
from amqtt.session import Session  # type: ignore[import-untyped]
from amqtt.utils import gen_client_id  # type: ignore[import-untyped]


class GuardedBroker(Broker):  # type: ignore[misc]
    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError as exc:  # amqtt has answered it (if it could) and closes it
            await writer.close()
            raise MQTTError(exc) from exc
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc

        if not await self._authenticate(session, None):
            # Refused before any stored session of this client id is looked at.
            refusal = ConnackPacket.build(0, NOT_AUTHORIZED)
            await refusal.to_stream(writer)
            await writer.close()
            raise MQTTError(f"refused CONNECT from {remote_address}:{remote_port}")

        # From here on as amqtt 0.12 does it, for a client that proved who it is.
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            stored, _ = self._sessions[session.client_id]
            for name in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(stored, name, getattr(session, name))
            session = stored
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        subscribers = self._subscriptions.get(topic_filter, [])
        handler = self._get_handler(session)
        if handler is None or all(s.client_id != session.client_id for s, _ in subscribers):
            return  # another client's filter: nothing for this session
        sends = []
        for name, retained in list(self._retained_messages.items()):
            if not self._matches(name, topic_filter):
                continue
            if not await self._topic_filtering(session, topic=name, action=Action.RECEIVE):
                continue
            granted = min(qos, retained.qos or qos)
            sends.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(retained.topic, retained.data, granted, retain=True)
                )
            )
        if sends:
            await asyncio.wait(sends)


__all__ = ["GuardedBroker"]
