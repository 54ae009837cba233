"""The six default categories, each with a first policy version (ML admins tune them in the console)."""

from django.db import migrations

DEFAULTS = [
    ("violence", "Violence", "threats, incitement or glorification of violence; graphic violence", "remove", 0.95),
    ("adult_content", "Adult content", "nudity and sexual content", "restrict", 0.9),
    ("hate_speech", "Hate speech", "attacks on people for a protected characteristic", "remove", 0.9),
    ("harassment", "Harassment", "insults, abuse and bullying aimed at a person", "remove", 0.95),
    ("spam", "Spam", "unsolicited advertising, scams, repetitive posting", "remove", 0.9),
    ("misinformation", "Misinformation", "claims rated false or misleading", "label", 0.95),
]
ALLOW_BELOW = 0.2
AUDIT_SAMPLE_RATE = 0.05


def create(apps, schema_editor):
    Category = apps.get_model("moderation", "Category")
    Policy = apps.get_model("moderation", "Policy")
    for slug, name, description, action, block_above in DEFAULTS:
        category, created = Category.objects.get_or_create(
            slug=slug, defaults={"name": name, "description": description}
        )
        if created:
            Policy.objects.create(
                category=category,
                version=1,
                allow_below=ALLOW_BELOW,
                block_above=block_above,
                action=action,
                audit_sample_rate=AUDIT_SAMPLE_RATE,
                reason="default policy",
            )


def remove(apps, schema_editor):
    apps.get_model("moderation", "Policy").objects.filter(version=1, reason="default policy").delete()
    apps.get_model("moderation", "Category").objects.filter(slug__in=[d[0] for d in DEFAULTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("moderation", "0001_initial")]
    operations = [migrations.RunPython(create, remove)]
