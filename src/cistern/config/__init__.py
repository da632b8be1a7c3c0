"""cistern.config"""
