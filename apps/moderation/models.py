"""Moderation: posts, their scores with evidence, the policies that route them, and the human review of the rest."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Category(models.Model):
    """A harm the platform scores (``hate_speech``, ``spam``...). Adding one is a row, not code: it is scored as soon
    as a fusion head trained with it is champion, and until then its items go to review."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.slug


class PolicyAction(models.TextChoices):
    REMOVE = "remove"
    RESTRICT = "restrict"  # kept, hidden from feeds and minors
    LABEL = "label"  # kept, shown with a warning


class Policy(models.Model):
    """One version of a category's routing rules; the highest version is in force. Versions are never edited:
    a change is a new version (audited), so every past decision can name the rules it was made under."""

    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="policies")
    version = models.PositiveIntegerField()
    allow_below = models.FloatField(help_text="scores below this are approved automatically")
    block_above = models.FloatField(help_text="scores above this are acted on automatically")
    action = models.CharField(max_length=20, choices=PolicyAction.choices, default=PolicyAction.REMOVE)
    audit_sample_rate = models.FloatField(
        default=0.05, help_text="share of automatic decisions also sent to human review"
    )
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["category__slug", "-version"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["category", "version"], name="moderation_policy_unique_version"),
            models.CheckConstraint(
                condition=Q(allow_below__gte=0) & Q(allow_below__lte=models.F("block_above")) & Q(block_above__lte=1),
                name="moderation_policy_thresholds_ordered",
            ),
            models.CheckConstraint(
                condition=Q(audit_sample_rate__gte=0) & Q(audit_sample_rate__lte=1),
                name="moderation_policy_sample_rate_is_a_share",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.category.slug} v{self.version}"

    def to_dict(self) -> dict[str, object]:
        """What a result records of the rules it was routed by."""
        return {
            "version": self.version,
            "allow_below": self.allow_below,
            "block_above": self.block_above,
            "action": self.action,
            "audit_sample_rate": self.audit_sample_rate,
        }


class ItemStatus(models.TextChoices):
    SCORING = "scoring"
    IN_REVIEW = "in_review"
    DECIDED = "decided"
    FAILED = "failed"  # scoring failed; the job keeps the error and can be retried


class Decision(models.TextChoices):
    APPROVE = "approve"
    REMOVE = "remove"
    RESTRICT = "restrict"
    LABEL = "label"


class ContentItem(models.Model):
    """One post: text, an image, or both, as an integrator sent it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    text = models.TextField(blank=True)
    image = models.FileField(upload_to="moderation/images/", blank=True)
    image_sha256 = models.CharField(max_length=64, blank=True)
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    author_ref = models.CharField(max_length=200, blank=True, help_text="the integrator's id for the author")
    source = models.CharField(max_length=50, default="api")
    metadata = models.JSONField(default=dict, blank=True)
    content_sha256 = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=20, choices=ItemStatus.choices, default=ItemStatus.SCORING, db_index=True)
    decision = models.CharField(max_length=20, choices=Decision.choices, blank=True)
    decided_automatically = models.BooleanField(default=False)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey("jobs.InferenceJob", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~Q(text="") | ~Q(image=""), name="moderation_item_has_content"),
        ]

    def __str__(self) -> str:
        return f"item {self.pk} ({self.status})"

    @property
    def has_image(self) -> bool:
        return bool(self.image)


class Route(models.TextChoices):
    APPROVE = "approve"
    REVIEW = "review"
    ACT = "act"
    NOT_SCORED = "not_scored"  # per category only: the model gives this post no score for it


class ModerationResult(models.Model):
    """One scoring of an item: calibrated probabilities per category, how the policies routed them, the evidence
    behind them and every model version that took part."""

    item = models.ForeignKey(ContentItem, on_delete=models.CASCADE, related_name="results")
    job = models.OneToOneField("jobs.InferenceJob", on_delete=models.PROTECT, related_name="+")
    scores = models.JSONField(default=dict, help_text="category -> calibrated probability")
    routes = models.JSONField(default=dict, help_text="category -> {route, score, policy}")
    route = models.CharField(max_length=20, choices=Route.choices)
    evidence = models.JSONField(default=dict)
    model_versions = models.JSONField(default=dict, help_text="role -> name@version")
    fusion_model = models.ForeignKey(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    timings = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"result of {self.item_id}: {self.route}"


class EvidenceImage(models.Model):
    """A rendered explanation stored with a result: detector boxes drawn on the image, a heatmap overlay."""

    class Kind(models.TextChoices):
        BOXES = "boxes"
        HEATMAP = "heatmap"

    result = models.ForeignKey(ModerationResult, on_delete=models.CASCADE, related_name="images")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    label = models.CharField(max_length=100, blank=True)
    file = models.FileField(upload_to="moderation/evidence/")
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["result", "kind", "label"]

    def __str__(self) -> str:
        return f"{self.kind} {self.label}".strip()


class ReviewReason(models.TextChoices):
    UNCERTAIN = "uncertain"  # a score between a policy's allow and block thresholds
    AUDIT_SAMPLE = "audit_sample"  # a random share of automatic decisions
    NO_MODEL = "no_model"  # no moderation model is champion: a human decides
    ESCALATION = "escalation"
    APPEAL = "appeal"


class ReviewStatus(models.TextChoices):
    OPEN = "open"
    DONE = "done"


class ReviewTask(models.Model):
    """A human look at one item. The queue hands tasks out under a lease, so two moderators never hold the same one;
    an expired lease puts the task back in the queue."""

    item = models.ForeignKey(ContentItem, on_delete=models.CASCADE, related_name="review_tasks")
    result = models.ForeignKey(ModerationResult, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    queue = models.CharField(max_length=30, default="default", db_index=True)
    reason = models.CharField(max_length=20, choices=ReviewReason.choices)
    status = models.CharField(max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.OPEN, db_index=True)
    leased_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # An appeal must be seen by someone other than the moderator who made the decision appealed against.
    excluded_reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decision = models.CharField(max_length=20, blank=True)
    decision_reason = models.TextField(blank=True)
    # category -> 0/1 as the reviewer judged it: the training labels this review gives (moderation_train reads them).
    labels = models.JSONField(default=dict, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    seconds_spent = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["item"], condition=Q(status="open"), name="moderation_one_open_task_per_item"
            ),
        ]

    def __str__(self) -> str:
        return f"review of {self.item_id} ({self.reason}, {self.status})"


class AppealStatus(models.TextChoices):
    OPEN = "open"
    UPHELD = "upheld"  # the second moderator kept the decision
    OVERTURNED = "overturned"


class Appeal(models.Model):
    """An author's request to look again at a decision; a second moderator (never the one who decided) reviews it."""

    item = models.ForeignKey(ContentItem, on_delete=models.CASCADE, related_name="appeals")
    statement = models.TextField()
    status = models.CharField(max_length=20, choices=AppealStatus.choices, default=AppealStatus.OPEN)
    decision_appealed = models.CharField(max_length=20)
    task = models.OneToOneField(ReviewTask, on_delete=models.PROTECT, related_name="appeal")
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["item"], condition=Q(status="open"), name="moderation_one_open_appeal"),
        ]

    def __str__(self) -> str:
        return f"appeal of {self.item_id} ({self.status})"


class WebhookEndpoint(models.Model):
    """Where an integrator wants final decisions on the items they submitted, signed with ``secret``."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=500)
    # Kept as is: signing needs the secret itself. Shown to the integrator once, at creation.
    secret = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed; the decision itself stands


class WebhookDelivery(models.Model):
    """One event for one endpoint, with every attempt's outcome: the delivery log an integrator reads."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    item = models.ForeignKey(ContentItem, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    log = models.JSONField(default=list, help_text="one entry per attempt: when, HTTP status or error")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} -> {self.endpoint_id} ({self.status})"
