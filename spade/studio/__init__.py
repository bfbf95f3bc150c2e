"""The studio: paint a rough in the browser, get a face (`python -m spade studio`)."""

from spade.studio.app import create_app
from spade.studio.uploads import Limits

__all__ = ["Limits", "create_app"]
