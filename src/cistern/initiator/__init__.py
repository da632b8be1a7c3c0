"""cistern.initiator"""
