from django import forms


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, label="Actor (username)")
    action = forms.CharField(required=False, help_text="prefix, e.g. job. or model.promote")
    target_type = forms.CharField(required=False, label="Target type", help_text="e.g. jobs.inferencejob")
    target_id = forms.CharField(required=False, label="Target id")
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
