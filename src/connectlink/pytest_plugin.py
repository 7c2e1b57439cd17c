"""ConnectLink's pytest plugin (entry point ``pytest11``): fixtures for a retailer's own tests."""
