"""Bot-call flows: declarative call scripts, the signed position of a call in its flow, and
the TwiML of each step. Pure code: no I/O, no framework; the gateway's HTTP layer and the
flows worker both build on it.
"""
