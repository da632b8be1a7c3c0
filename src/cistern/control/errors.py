"""The error vocabulary of live administration: :class:`AdminError` names the object and the cause."""

from __future__ import annotations


class AdminError(Exception):
    """A change that cannot be made.  ``obj`` names the object, ``cause`` says why; ``status`` is the HTTP
    status the API answers with (400 bad request, 404 unknown object, 409 conflict with the running state)."""

    def __init__(self, obj: str, cause: str, status: int = 400, issues: list[str] | None = None) -> None:
        super().__init__(f"{obj}: {cause}" if obj else cause)
        self.obj = obj
        self.cause = cause
        self.status = status
        self.issues = issues or [str(self)]

    def as_dict(self) -> dict[str, object]:
        return {"error": {"object": self.obj, "cause": self.cause, "issues": self.issues}}
