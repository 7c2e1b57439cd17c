"""The OAuth 2.0 protocol core (RFC 6749, 6750, 7009, 7636) as Instacart Connect uses it.

No web framework and no SQL here: functions take small frozen request objects, the ``Store``
interface and a clock, and return results or raise errors from ``connectlink.errors``.
"""
