from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet

from apps.accounts.roles import Role, user_roles
from apps.audit.models import AuditEvent
from apps.jobs.models import InferenceJob

SEE_ALL_JOBS: frozenset[str] = frozenset({Role.ML_ADMIN, Role.AUDITOR})


def jobs_visible_to(*, user: User) -> QuerySet[InferenceJob]:
    """ML admins and auditors see every job; everyone else sees the jobs they submitted."""
    jobs = InferenceJob.objects.select_related("model_version", "created_by")
    if SEE_ALL_JOBS & user_roles(user):
        return jobs
    return jobs.filter(created_by=user)


def job_audit_events(*, job: InferenceJob) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(target_type=InferenceJob._meta.label_lower, target_id=str(job.pk)).order_by("id")
