"""The HTTP API: an aiohttp application, one module per resource."""
