"""Every refusal the ledger makes is a LedgerError subclass with a message a person can act on."""


class LedgerError(Exception):
    """Base of every error the ledger reports to a user."""


class ValidationError(LedgerError):
    """A command or an import line is malformed."""


class NotInitialized(LedgerError):
    """The ledger has no organization yet."""


class AlreadyInitialized(LedgerError):
    """The ledger already has an organization."""


class UnknownEntity(LedgerError):
    """A tenant, principal, team, role or connector that the ledger does not know."""


class DuplicateEntity(LedgerError):
    """Something with that name already exists."""


class InactivePrincipal(LedgerError):
    """The principal is deactivated."""


class DeletedTenant(LedgerError):
    """The tenant has been deleted; nothing may target it any more."""


class ScopeMismatch(LedgerError):
    """A role used where its scope does not fit (tenant role without tenant, and so on)."""


class PredefinedRole(LedgerError):
    """Predefined roles are immutable."""


class RoleInUse(LedgerError):
    """A role that is assigned or is the base of another role cannot be deleted."""


class RoleCycle(LedgerError):
    """The change would make a cycle of base roles."""


class AlreadyAssigned(LedgerError):
    """The same assignment is already held (expired or not)."""


class NotAssigned(LedgerError):
    """The assignment to revoke is not held."""


class MembershipError(LedgerError):
    """Adding a member twice or removing one that is not a member."""


class OutOfOrder(LedgerError):
    """An event dated before the ledger's newest event, or too far in the future."""


class IdConflict(LedgerError):
    """An idempotency id already used by a different event."""


class StorageError(LedgerError):
    """The database could not be opened or written (read-only, disk full, unreachable)."""


class ConcurrentWrite(StorageError):
    """Another writer held the ledger for too long; the command wrote nothing and can be retried."""


class IntegrityFailure(LedgerError):
    """verify found the log changed."""


class ReviewRefused(LedgerError):
    """An access review step the campaign's rules do not allow (wrong reviewer, closed, no such item, ...)."""


class Unauthorised(LedgerError):
    """A ledger that enforces authority refuses a change its actor was not allowed to make."""
