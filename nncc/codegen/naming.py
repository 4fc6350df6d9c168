"""Safe rendering of model-supplied text in generated source: names are data, never code."""
from __future__ import annotations

import json


def comment_text(text: str) -> str:
    """Model text made safe for a ``#`` comment: JSON escaping removes newlines and control characters."""
    return json.dumps(text)[1:-1]
