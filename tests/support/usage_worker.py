"""A usage worker process for end-to-end tests: the real UsageHandler on the real Runner.

    python -m tests.support.usage_worker AMQP_URL DB_URL PROGRESS_FILE HOLD_S

It meters the ``acme`` tenant with the test rate card and a 1.00 prepaid budget, publishes
usage.budget events to RabbitMQ, and stops on SIGTERM. After each handled batch it writes the
number of batches handled to PROGRESS_FILE and then holds the batch HOLD_S seconds before the
runner may ack it: a test can SIGKILL it there, after the ledger commit and before the acks,
the window in which a crash means redelivery of work already counted.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from gateway.broker.factory import create_publisher
from gateway.log import configure_logging
from gateway.usage_config import Budget
from tests.support.usage import CARD
from workers.amqp_transport import AmqpTransport
from workers.backends import create_ledger
from workers.handler import Delivery, Result
from workers.runner import Runner
from workers.usage.ledger import UsagePolicy
from workers.usage.usage_worker import UsageHandler

BUDGETS = {"acme": Budget("prepaid", Decimal("1.00"))}


class HoldingUsageHandler(UsageHandler):
    """The usage handler, reporting progress and holding each batch before its acks."""

    def __init__(self, *args: object, progress: Path, hold_s: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.progress, self.hold_s, self.done = progress, hold_s, 0

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        results = await super().handle(batch)
        self.done += 1
        self.progress.write_text(str(self.done))
        await asyncio.sleep(self.hold_s)
        return results


async def main(amqp_url: str, db_url: str, progress: Path, hold_s: float) -> None:
    handler = HoldingUsageHandler(
        create_ledger(db_url),
        UsagePolicy(CARD, BUDGETS),
        create_publisher(amqp_url, ["acme"]),
        batch_size=50,
        batch_wait_s=0.05,
        progress=progress,
        hold_s=hold_s,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await Runner(handler, AmqpTransport(amqp_url, "usage")).run(stop)


if __name__ == "__main__":
    configure_logging("json", "warning", stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])))
