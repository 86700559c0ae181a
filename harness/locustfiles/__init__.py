"""Locust load tests, one locustfile per transport (see README, "Locust")."""
