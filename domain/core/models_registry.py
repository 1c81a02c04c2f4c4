"""Import every model module so that Base.metadata knows every table."""


def import_all() -> None:
    import domain.ai.models
    import domain.audit.models
    import domain.idempotency.models
    import domain.jobs.models
    import domain.notifications.models
    import domain.operations.models
    import domain.references.models
    import domain.users.models
    import domain.verification.models  # noqa: F401
