"""Phone numbers in E.164 form, as Twilio accepts them in numbers and caller ids.

https://www.twilio.com/docs/glossary/what-e164 . A leaf module: the config sections, the
tenant registry and the flows worker check numbers against it without importing each other.
"""

from __future__ import annotations

import re
from typing import Final

E164_PATTERN: Final = re.compile(r"\+[1-9][0-9]{1,14}")
