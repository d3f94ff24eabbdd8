"""Reporting: Allure results per cell, the run's environment, and the one-screen summary."""
