"""Quoting for SQL text: the one place names and strings are made safe to put in a query."""

from __future__ import annotations


def quote_name(key: str) -> str:
    '''``key`` as a quoted SQL identifier.

    >>> print(quote_name('say "hi"'))
    "say ""hi"""
    '''
    return '"' + key.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal.

    >>> quote_literal("it's")
    "'it''s'"
    """
    return "'" + text.replace("'", "''") + "'"
