from django.apps import AppConfig


class ModerationConfig(AppConfig):
    name = "apps.moderation"
    label = "moderation"

    def ready(self) -> None:
        from apps.jobs.kinds import register_kind
        from apps.moderation.kinds import MODERATION_SCORE

        register_kind(MODERATION_SCORE)
