from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector for every app that stores embeddings (search, moderation features)."""

    initial = True
    dependencies: list = []
    operations = [VectorExtension()]
