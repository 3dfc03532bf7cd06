"""Annotation status workflow: which transitions exist and who may make them.

``proposed → draft → submitted → approved | rejected``; a proposal is
accepted (→ draft, possibly corrected) or rejected by an annotator; a
submission is approved or rejected by a reviewer, or withdrawn by its
annotator; a rejected annotation can be reopened; ``deleted`` is a status
(annotations are never erased, their history stays).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from oncostruct_shared.errors import Conflict


class Status(StrEnum):
    """Where an annotation is in its review."""

    proposed = "proposed"
    draft = "draft"
    submitted = "submitted"
    approved = "approved"
    rejected = "rejected"
    deleted = "deleted"


class Action(StrEnum):
    """What a person does to an annotation's status."""

    accept = "accept"
    reject = "reject"
    submit = "submit"
    withdraw = "withdraw"
    approve = "approve"
    reopen = "reopen"
    delete = "delete"


@dataclass(frozen=True)
class Transition:
    """One allowed move: the resulting status and whether it is a review decision."""

    target: Status
    review: bool = False


TRANSITIONS: dict[tuple[Status, Action], Transition] = {
    (Status.proposed, Action.accept): Transition(Status.draft),
    (Status.proposed, Action.reject): Transition(Status.rejected),
    (Status.proposed, Action.delete): Transition(Status.deleted),
    (Status.draft, Action.submit): Transition(Status.submitted),
    (Status.draft, Action.delete): Transition(Status.deleted),
    (Status.submitted, Action.withdraw): Transition(Status.draft),
    (Status.submitted, Action.approve): Transition(Status.approved, review=True),
    (Status.submitted, Action.reject): Transition(Status.rejected, review=True),
    (Status.rejected, Action.reopen): Transition(Status.draft),
    (Status.rejected, Action.delete): Transition(Status.deleted),
    (Status.approved, Action.delete): Transition(Status.deleted, review=True),
}

#: Statuses in which the content (value, attributes, geometry) may still change.
EDITABLE: frozenset[Status] = frozenset({Status.proposed, Status.draft, Status.rejected})


def transition(current: Status, action: Action) -> Transition:
    """The transition ``action`` makes from ``current``; :class:`Conflict` if there is none."""
    found = TRANSITIONS.get((current, action))
    if found is None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s == current)
        raise Conflict(
            f"Cannot {action.value} an annotation that is {current.value}; "
            f"allowed: {', '.join(allowed) if allowed else 'none (final)'}."
        )
    return found
