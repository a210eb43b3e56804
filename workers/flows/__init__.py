"""The flows worker: bot-call commands become paced Twilio calls, and calls become results."""
