"""Cross-cutting pieces every service and the gateway stand on."""
