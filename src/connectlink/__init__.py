"""ConnectLink: the Instacart Connect account-linking API, exact to the wire."""

__version__ = "0.1.0"
