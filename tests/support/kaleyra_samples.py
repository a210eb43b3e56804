"""Kaleyra.io callbacks as a callback profile or the legacy dlrurl would send them."""

from __future__ import annotations

import base64
from typing import Any, Final

MESSAGE_ID: Final = "ee8a1f2c-3b4d-4e5f-8a9b-9b717c0d330d:1"


def dlr(message_id: str = MESSAGE_ID, status: str = "Delivered") -> dict[str, Any]:
    """A delivery report body a JSON callback profile template produces."""
    return {
        "id": message_id,
        "status": status,
        "status_details": status.upper(),
        "to": "+919876543210",
        "sender": "KLRHXA",
        "units": 1,
        "credits": "0.2500",
        "delivered_at": "2025-04-17 18:35:20",
    }


def incoming(message_id: str = "90e1a2b3-8865-4a96-85b6-4c0ffee00048") -> dict[str, str]:
    """An incoming SMS body (callback profile variables of Kaleyra's incoming SMS)."""
    return {
        "id": message_id,
        "source": "919876543210",
        "recipient": "+919812345678",
        "message": "STOP offers please",
        "keyword": "STOP",
        "operator": "JIO",
        "circle": "JIO ASSAM",
        "timestamp": "2025-04-17 18:35:20",
        "status": "SENT",
    }


def legacy_query(message_id: str = MESSAGE_ID, status: str = "DELIVRD") -> dict[str, str]:
    """The legacy dlrurl placeholders, filled in."""
    return {
        "sid": message_id,
        "status": status,
        "custom": "order-1",
        "delivered": "2025-04-17 18:35:20",
        "mobile": "919876543210",
        "units": "1",
        "credits": "1.00",
    }


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def basic(secret: str, user: str = "kaleyra") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"authorization": f"Basic {token}"}
