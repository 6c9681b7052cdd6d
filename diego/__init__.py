"""diego: Cloud Foundry's Diego scheduler as one asyncio program, with a TES front door."""

__version__ = "0.1.0"
