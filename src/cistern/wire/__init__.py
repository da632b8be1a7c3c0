"""cistern.wire"""
