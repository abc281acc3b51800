"""verl-epo: EPO (arXiv 2509.22576) as a verl plug-in."""
