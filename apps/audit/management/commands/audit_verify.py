from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_first_break


class Command(BaseCommand):
    help = "Verify the audit log's hash chain and report the first broken link."

    def handle(self, *args: Any, **options: Any) -> None:
        broken = audit_chain_first_break()
        if broken is not None:
            raise CommandError(f"audit chain broken at event id={broken.event_id}: {broken.reason}")
        self.stdout.write(f"audit chain intact: {AuditEvent.objects.count()} events verified")
