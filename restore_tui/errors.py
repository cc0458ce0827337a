"""The one exception every front-end shows as `error: …`: a problem the user can fix.

It sits below the CLI, the engine and the flow, so none of them imports another for it.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""
